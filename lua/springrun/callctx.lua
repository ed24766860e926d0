-- springrun.callctx: the context of the call a task is serving, as Pyro4's
-- current_context, and the correlation id that ties a call to the calls it
-- makes.
--
--   springrun.current_context() -> { correlation_id = "uuid text" | nil,
--                                    client_address = "host:port" | nil }
--       Inside a service method: the incoming call's correlation id (the
--       CORR its caller sent; a new random one when it sent none, as a
--       Pyro4 daemon does) and the caller's address (nil once it closed).
--       Anywhere else: the id set with set_correlation_id, no address.
--   springrun.set_correlation_id(uuid | nil)
--       Inside a service method: replaces the call's id; elsewhere sets the
--       id the proxy calls of this process send (nil: none).
--
-- Proxy calls made while serving a call send its id (CORR annotation);
-- calls made elsewhere send the id set with set_correlation_id, if any.
-- Log lines written while serving a call that has an id carry it
-- ("[corr <uuid>] message"). A task started with runtime.spawn from a
-- service does not inherit the call's id.
local runtime = require "springrun.runtime"
local core = require "springrun.core"

local M = {}

-- co -> the correlation id (16 bytes) of the call it serves; filled by the
-- exporter's dispatch (core.serve_new's policy.corrs), or here when made
local corrs = setmetatable({}, { __mode = "k" })
M._corrs = corrs

local process_corr -- 16 bytes: the id of calls made outside served calls

local uv_random = require("luv").random

-- A random (version 4) uuid, 16 bytes.
local function uuid4()
  local b = uv_random(16)
  if type(b) ~= "string" or #b ~= 16 then -- no entropy source: still unique enough to correlate
    local t = {}
    for i = 1, 16 do t[i] = string.char(math.random(0, 255)) end
    b = table.concat(t)
  end
  local b7, b9 = b:byte(7), b:byte(9)
  return b:sub(1, 6) .. string.char((b7 & 0x0f) | 0x40) .. b:sub(8, 8)
    .. string.char((b9 & 0x3f) | 0x80) .. b:sub(10)
end

M._uuid4 = uuid4

-- 16 bytes -> "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
function M.uuid_text(b)
  local h = b:gsub(".", function(c) return string.format("%02x", c:byte()) end)
  return h:sub(1, 8) .. "-" .. h:sub(9, 12) .. "-" .. h:sub(13, 16) .. "-" .. h:sub(17, 20) .. "-" .. h:sub(21)
end

-- uuid text (with or without hyphens, any case) -> 16 bytes, or nil
local function uuid_bytes(s)
  if type(s) ~= "string" then return nil end
  local hex = s:gsub("-", "")
  if #hex ~= 32 or hex:find("[^%x]") then return nil end
  return (hex:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

-- The id of the call the running task serves (made when the call came
-- without one), or nil when the running code serves no call.
local function serving_corr()
  local co, main = coroutine.running()
  if main or runtime._serving_conn() == nil then return nil end
  local c = corrs[co]
  if c == nil then
    c = uuid4()
    corrs[co] = c
  end
  return c
end

-- The 16 bytes a proxy call made now sends as CORR, or nil.
function M.outgoing()
  return serving_corr() or process_corr
end

-- The id as text for a log line written now, or nil outside served calls.
function M.log_tag()
  local c = serving_corr()
  return c and M.uuid_text(c) or nil
end

function M.current_context()
  local conn = runtime._serving_conn()
  local c = serving_corr() or process_corr
  return {
    correlation_id = c and M.uuid_text(c) or nil,
    client_address = conn and core.daemon_peer(conn) or nil,
  }
end

function M.set_correlation_id(id)
  local b = nil
  if id ~= nil then
    b = uuid_bytes(id)
    if b == nil then
      error("set_correlation_id: expected a UUID text (like 1b4e28ba-2fa1-41d2-883f-0016d3cca427) or nil, got "
        .. (type(id) == "string" and string.format("%q", id) or type(id)), 2)
    end
  end
  local co, main = coroutine.running()
  if not main and runtime._serving_conn() ~= nil then
    corrs[co] = b or uuid4()
  else
    process_corr = b
  end
end

require("springrun.log").set_tagger(M.log_tag)

return M
