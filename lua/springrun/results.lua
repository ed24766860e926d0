-- springrun.results: the results of a Pyro call that are iterators rather
-- than values, on the client side: an item stream (a remote method that
-- returned an iterator) and the results of a batch. springrun.session makes
-- them from the reply; they live apart because they outlive the call and
-- make calls of their own (an item stream asks Pyro.Daemon for each item).
local errors = require "springrun.errors"

local M = {}

local DAEMON_OBJECT = "Pyro.Daemon"

-- ---- item streams (a method that returned an iterator) ---------------------------
--
-- The call's result is a StreamIterator: calling it gives the next item (nil
-- at the end), so `for item in proxy:count(5) do ... end` works; it is also
-- the loop's closing value (the call returns it, nil, nil, it), so leaving
-- the loop early closes the stream on the server (close_stream), as
-- stream:close() and collecting it do. The items are asked for with
-- Pyro.Daemon's get_next_stream_item on a connection of its own (a proxy
-- to PYRO:Pyro.Daemon@host:port with the options of the calling proxy),
-- closed with the stream.
local StreamIterator = { __name = "springrun.StreamIterator" }
StreamIterator.__index = StreamIterator

local PROXY_OPTIONS = { "timeout", "serializer", "handshake", "ssl", "ssl_verify", "ssl_cacerts",
  "ssl_certfile", "ssl_keyfile", "ssl_servername" }

function M.stream_iterator(st, name, id)
  local u = st.uri
  local host = u.host:find(":", 1, true) and ("[" .. u.host .. "]") or u.host
  local opts = {}
  for _, k in ipairs(PROXY_OPTIONS) do opts[k] = st[k] end
  local daemon = require("springrun.proxy").proxy(
    string.format("PYRO:%s@%s:%d", DAEMON_OBJECT, host, u.port), opts)
  return setmetatable({ id = id, daemon = daemon, url = st.url, method = name }, StreamIterator)
end

-- The next item, or nil when the stream has ended (then it is closed).
function StreamIterator:__call()
  local d = self.daemon
  if d == nil then return nil end
  local ok, v = pcall(d.get_next_stream_item, d, self.id)
  if ok then return v end
  self.daemon = nil
  d:destroy()
  if type(v) == "table" and (v.class == "builtins.StopIteration" or v.class == "StopIteration") then
    return nil
  end
  error(v, 0)
end

-- Ends the stream: tells the server (close_stream) unless it ended there.
-- Idempotent.
function StreamIterator:close()
  local d = self.daemon
  if d == nil then return end
  self.daemon = nil
  pcall(d.close_stream, d, self.id)
  d:destroy()
end

StreamIterator.__close = StreamIterator.close
-- collected unclosed: the connection is just dropped (a call from a
-- finalizer may not yield); the server ends the stream by its linger
StreamIterator.__gc = function(self)
  local d = self.daemon
  if d then
    self.daemon = nil
    pcall(d.destroy, d)
  end
end

function M.is_stream(v) return getmetatable(v) == StreamIterator end

-- ---- batch results ------------------------------------------------------------------
--
-- The reply to a batch is the list of its calls' results, in order; a call
-- that raised has Pyro4's {"__class__": "Pyro4.futures._ExceptionWrapper",
-- "exception": {...}} in its place and the calls after it did not run.
-- BatchResults is the iterator Pyro4's batch generator is: each call gives
-- the next result (a call that returned nil gives springrun.null, as nulls
-- in lists do, so that a for loop does not stop there), raises the remote
-- error (kind "remote", its class; method: the call's name) at the wrapper,
-- and gives nil after the last result or an error.
local BatchResults = { __name = "springrun.BatchResults" }
BatchResults.__index = BatchResults

local EXCEPTION_WRAPPER = "Pyro4.futures._ExceptionWrapper"

-- The results of the batch calls (their list: entries {name, args, kwargs})
-- to url, from the reply's list.
function M.batch_results(list, calls, url)
  return setmetatable({ list = list, i = 0, calls = calls, url = url }, BatchResults)
end

function BatchResults:__call()
  local list = self.list
  if list == nil then return nil end
  local i = self.i + 1
  local v = list[i]
  if v == nil then
    self.list = nil
    return nil
  end
  self.i = i
  if type(v) == "table" and rawget(v, "__class__") == EXCEPTION_WRAPPER then
    self.list = nil
    local c = self.calls[i]
    error(errors.from_remote(rawget(v, "exception"), { url = self.url, method = c and c[1] }), 0)
  end
  return v
end

function BatchResults:__tostring()
  return string.format("springrun.BatchResults(%d calls to %s)", self.calls.n or #self.calls, self.url)
end

function M.is_batch_results(v) return getmetatable(v) == BatchResults end

return M
