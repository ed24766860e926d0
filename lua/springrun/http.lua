-- springrun.http: the project's one HTTP client (libcurl's multi interface
-- on luv's loop, src/http.c and src/lsr_http.c). The same code path serves
-- every caller: inside a springrun task (springrun.runtime.current() ~= nil:
-- a service method, a spawned task) waiting yields the task, so other tasks
-- and the daemons keep running; outside a task (a plain script, the REPL)
-- waiting turns luv's loop until the response is complete.
--
--   http.request{ url =, method = "GET", headers = {...}, body =,
--                 timeout =, connect_timeout =, max_size =, on_data =,
--                 ssl_cacerts =, ssl_certfile =, ssl_keyfile =, ssl_verify = }
--       -> { status = 200, headers = { ["content-type"] = "...", ... },
--            body = "..." }
--       raises a springrun.errors object otherwise (see below). Any HTTP
--       status is a response (a 404 or 500 is not raised).
--   http.start{ ... } -> req          the request in flight
--   req:wait() -> response            (raises as request does)
--   req:cancel()                      stops it; a waiter gets kind "closed",
--                                     code "ECANCELED"
--   http.start{ ..., on_done = fn(response, err) }  callback mode, for what
--       outlives any one task (a watch, a keep-alive): on_data and on_done
--       are called from the loop (they must not block; spawn a task to make
--       calls), on_done once with the response or the error object (or
--       on_data's error), never after cancel(); wait() is not allowed.
--   http.pending() -> requests in flight in this process
--
-- Options:
--   url          http:// or https:// (required)
--   method       "GET" (default), "POST", "PUT", "DELETE", "HEAD", ...
--   headers      { ["Content-Type"] = "application/json", ... } or a list of
--                "Name: value" lines
--   body         the request body (a string)
--   timeout      seconds for the whole exchange (default: none)
--   connect_timeout  seconds to connect, TLS included (default 10)
--   max_size     the largest body kept in memory (default 64 MiB,
--                http.defaults.max_size); past it the transfer stops with
--                kind "protocol", code "SR_ELIMIT"
--   on_data      function(chunk): streaming (a long-lived response such as
--                an etcd watch): each chunk is handed over as it arrives,
--                nothing is kept, the response's body is "" (max_size does
--                not apply). on_data runs in the waiting caller (the task,
--                or the blocking caller between loop turns), so it may yield
--                or make calls; when it raises, the request is cancelled and
--                the error propagates from wait().
--   ssl_cacerts  CA file or directory the server certificate must chain to
--                (default: the system's store)
--   ssl_certfile, ssl_keyfile  client certificate and key (PEM)
--   ssl_verify   false: no certificate or name check (tests only)
--
-- Connections are kept alive and reused by later requests to the same
-- host:port (one connection cache per process).
--
-- Errors (springrun.errors, class "springrun.http.Error", with url, method,
-- code): kind "refused" (nobody listens), "connect" (name not resolved,
-- unreachable, TLS handshake or certificate refused), "timeout" (the message
-- says timeout), "closed" (the connection broke mid-response, or cancelled),
-- "protocol" (not HTTP, or past max_size), "config" (a bad URL or option;
-- misuse raises at once).
local core = require "springrun.core"
local errors = require "springrun.errors"
local uv = require "luv"

local M = {}

M.defaults = {
  max_size = 64 * 1024 * 1024,
  connect_timeout = 10,
}

local runtime_mod
local function runtime()
  if runtime_mod == nil then runtime_mod = require "springrun.runtime" end
  return runtime_mod
end

local CLASS = "springrun.http.Error"

local KIND_OF_CODE = {
  CURLE_COULDNT_RESOLVE_HOST = "connect",
  CURLE_COULDNT_RESOLVE_PROXY = "connect",
  CURLE_COULDNT_CONNECT = "connect",
  CURLE_OPERATION_TIMEDOUT = "timeout",
  CURLE_SSL_CONNECT_ERROR = "connect",
  CURLE_PEER_FAILED_VERIFICATION = "connect",
  CURLE_SSL_CERTPROBLEM = "connect",
  CURLE_SSL_CACERT_BADFILE = "connect",
  CURLE_SSL_CIPHER = "connect",
  CURLE_SSL_ISSUER_ERROR = "connect",
  CURLE_SSL_CLIENTCERT = "connect",
  CURLE_GOT_NOTHING = "closed",
  CURLE_RECV_ERROR = "closed",
  CURLE_SEND_ERROR = "closed",
  CURLE_PARTIAL_FILE = "closed",
  CURLE_URL_MALFORMAT = "config",
  CURLE_UNSUPPORTED_PROTOCOL = "config",
}

local function fail(method, url, kind, message, code)
  return errors.new(kind, string.format("%s %s: %s", method, url, message),
    { class = CLASS, url = url, method = method, code = code })
end

local function config_error(msg) errors.raise("config", "springrun.http: " .. msg, { class = CLASS }) end

-- The error object for a failed transfer (core's "error" event).
local function transfer_error(req, code, message, os_code, timeout)
  local kind = KIND_OF_CODE[code] or "protocol"
  if kind == "connect" and os_code == "ECONNREFUSED" then
    kind = "refused"
    message = "connection refused (" .. message .. ")"
  elseif kind == "timeout" then
    message = string.format("timeout%s (%s)", timeout and string.format(" after %g s", timeout) or "", message)
  end
  return fail(req.method, req.url, kind, message, os_code or code)
end

local Request = {}
Request.__index = Request
Request.__name = "springrun.http.Request"

function Request:_wake()
  local co = self.waiter
  if co then
    self.waiter = nil
    runtime().resume(co)
  end
end

-- Callback mode (opts.on_done): everything is handed over from the loop.
function Request:_callback_event(what, a, b, c, d)
  if what == "data" then
    local ok, err = pcall(self.on_data, a)
    if ok then return end
    self:cancel()
    self.err = err
  elseif what == "done" then
    self.response = { status = a, headers = b, body = c }
  else
    self.err = transfer_error(self, a, b, c, self.timeout)
  end
  self.done = true
  self.handle = nil
  local ok, err = pcall(self.on_done, self.response, self.err)
  if not ok then io.stderr:write("springrun.http: on_done failed: ", tostring(err), "\n") end
end

function Request:_event(what, a, b, c, d)
  if self.on_done then return self:_callback_event(what, a, b, c, d) end
  if what == "data" then
    self.chunks[#self.chunks + 1] = a
  elseif what == "done" then
    self.response = { status = a, headers = b, body = c }
    self.done = true
    self.handle = nil
  else -- "error"
    self.err = transfer_error(self, a, b, c, self.timeout)
    self.done = true
    self.handle = nil
  end
  self:_wake()
end

-- Hands queued chunks to on_data (in the waiter's context); true when the
-- request is over and nothing is left to hand over.
function Request:_drain()
  local chunks = self.chunks
  while #chunks > 0 do
    local chunk = table.remove(chunks, 1)
    local ok, err = pcall(self.on_data, chunk)
    if not ok then
      self:cancel()
      self.chunks = {}
      error(err, 0)
    end
  end
  return self.done
end

function Request:wait()
  if self.on_done then config_error("wait: the request was started with on_done") end
  if self.waiter then config_error("wait: the request already has a waiter") end
  local co = runtime().current()
  if co then
    while not self:_drain() do
      self.waiter = co
      coroutine.yield()
    end
  else
    if uv.loop_mode() ~= nil then
      self:cancel()
      config_error(string.format("%s %s: a blocking request inside a loop callback would re-enter the loop;"
        .. " make it from a task (springrun.runtime.spawn)", self.method, self.url))
    end
    while not self:_drain() do uv.run("once") end
  end
  if self.err then error(self.err, 0) end
  return self.response
end

function Request:cancel()
  local h = self.handle
  if h == nil then return false end
  self.handle = nil
  local was = h:cancel()
  if was and not self.done and not self.on_done then
    self.err = fail(self.method, self.url, "closed", "cancelled", "ECANCELED")
    self.done = true
    self:_wake()
  end
  return was
end

local function seconds(opts, k)
  local v = opts[k]
  if v == nil or v == false then return nil end
  if type(v) ~= "number" or v ~= v or v < 0 then
    config_error(string.format("%s must be a number of seconds >= 0, got %s", k, tostring(v)))
  end
  return v
end

local function header_lines(h)
  if h == nil then return nil end
  if type(h) ~= "table" then config_error("headers must be a table, got " .. type(h)) end
  local lines = {}
  if #h > 0 then
    for i, l in ipairs(h) do
      if type(l) ~= "string" then config_error(string.format("headers[%d] must be a string", i)) end
      lines[i] = l
    end
    return lines
  end
  local names = {}
  for k, v in pairs(h) do
    if type(k) ~= "string" or not k:match("^[%w!#$%%&'*+%-.^_`|~]+$") then
      config_error("header name " .. tostring(k) .. " is not a token")
    end
    if type(v) ~= "string" and type(v) ~= "number" then
      config_error(string.format("header %s must be a string, got %s", k, type(v)))
    end
    names[#names + 1] = k
  end
  table.sort(names)
  for i, k in ipairs(names) do lines[i] = k .. ": " .. tostring(h[k]) end
  return lines
end

local function is_dir(path)
  local st = uv.fs_stat(path)
  return st ~= nil and st.type == "directory"
end

-- http.start(opts) -> req (see the header).
function M.start(opts)
  if type(opts) ~= "table" then config_error("request: expected a table of options, got " .. type(opts)) end
  local url = opts.url
  if type(url) ~= "string" or not (url:match("^[Hh][Tt][Tt][Pp][Ss]?://[^/]")) then
    config_error("request: url must be an http:// or https:// URL, got " .. tostring(url))
  end
  local method = opts.method or "GET"
  if type(method) ~= "string" or not method:match("^[A-Z]+$") then
    config_error("request: method must be upper-case letters, got " .. tostring(method))
  end
  if opts.body ~= nil and type(opts.body) ~= "string" then
    config_error("request: body must be a string, got " .. type(opts.body))
  end
  if opts.on_data ~= nil and type(opts.on_data) ~= "function" then
    config_error("request: on_data must be a function, got " .. type(opts.on_data))
  end
  if opts.on_done ~= nil and type(opts.on_done) ~= "function" then
    config_error("request: on_done must be a function, got " .. type(opts.on_done))
  end
  local max_size = opts.max_size or M.defaults.max_size
  if math.type(max_size) ~= "integer" or max_size <= 0 then
    config_error("request: max_size must be a positive integer, got " .. tostring(max_size))
  end
  local timeout = seconds(opts, "timeout")
  local connect_timeout = seconds(opts, "connect_timeout") or M.defaults.connect_timeout
  local cacerts = opts.ssl_cacerts
  for _, k in ipairs({ "ssl_cacerts", "ssl_certfile", "ssl_keyfile" }) do
    if opts[k] ~= nil and type(opts[k]) ~= "string" then
      config_error(string.format("request: %s must be a file name, got %s", k, type(opts[k])))
    end
  end
  if opts.ssl_verify ~= nil and type(opts.ssl_verify) ~= "boolean" then
    config_error("request: ssl_verify must be true or false")
  end
  local req = setmetatable({ url = url, method = method, on_data = opts.on_data, on_done = opts.on_done,
    chunks = {},
    done = false, timeout = timeout }, Request)
  local handle, msg, code = core.http_start({
    url = url, method = method, headers = header_lines(opts.headers), body = opts.body,
    timeout = timeout, connect_timeout = connect_timeout, max_size = max_size,
    stream = opts.on_data ~= nil,
    cafile = cacerts and not is_dir(cacerts) and cacerts or nil,
    capath = cacerts and is_dir(cacerts) and cacerts or nil,
    certfile = opts.ssl_certfile, keyfile = opts.ssl_keyfile, verify = opts.ssl_verify ~= false,
  }, function(_, what, a, b, c, d) req:_event(what, a, b, c, d) end)
  if not handle then
    errors.raise(code == "SR_ENOMEM" and "protocol" or "config",
      string.format("%s %s: %s", method, url, msg), { class = CLASS, url = url, method = method, code = code })
  end
  req.handle = handle
  return req
end

-- http.request(opts) -> response (see the header).
function M.request(opts)
  return M.start(opts):wait()
end

function M.pending() return core.http_pending() end

return M
