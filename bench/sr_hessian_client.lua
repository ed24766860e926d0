-- The springrun client of make bench's Hessian rows: N add(i, 1) calls,
-- then N/20 echo calls of a list of 1,000 HessianTestServer$Bean objects,
-- through springrun.hessian_proxy (one kept-alive connection); prints
-- "small <calls/s>" and "beans <calls/s>".
-- Usage: springrun bench/sr_hessian_client.lua URL N
local springrun = require "springrun"
local hessian = springrun.hessian
local uv = require "luv"

local url, n = arg[1], tonumber(arg[2] or "1000")
local p = springrun.hessian_proxy(url, { timeout = 60 })
for i = 1, 200 do p:add(i, 1) end
local t0 = uv.hrtime()
for i = 1, n do p:add(i, 1) end
local t1 = uv.hrtime()
print(string.format("small %.0f", n / ((t1 - t0) / 1e9)))

local FIELDS = { "name", "count", "self", "items" } -- as Java writes the bean
local beans = {}
for i = 1, 1000 do
  beans[i] = hessian.object("HessianTestServer$Bean", { name = "bean" .. (i - 1), count = i - 1 }, FIELDS)
end
local m = math.max(1, n // 20)
for _ = 1, 5 do assert(#p:echo(beans) == 1000) end
t0 = uv.hrtime()
for _ = 1, m do p:echo(beans) end
t1 = uv.hrtime()
print(string.format("beans %.0f", m / ((t1 - t0) / 1e9)))
