-- Spec helper: test certificates made at run time with the `openssl` command
-- in a fresh temporary directory (nothing secret is kept in the tree).
--
--   local certs = require "helpers.certs"
--   local c = certs.make()   -- raises when openssl is missing
--   c.ca, c.server_cert, c.server_key, c.client_cert, c.client_key,
--   c.other_ca (a CA that signed nothing here), c.other_client_cert/key
--   (signed by other_ca), c.dir;  certs.remove(c) deletes the directory.
-- The server certificate names localhost and 127.0.0.1 (subjectAltName),
-- as Python's ssl (Pyro4) checks the host name of the address it connects to.
local M = {}

local function sh(cmd)
  local ok = os.execute(cmd .. " >/dev/null 2>&1")
  if not ok then error("certs: command failed: " .. cmd, 2) end
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- A key and a certificate signed by ca/ca_key (self-signed when nil).
local function issue(dir, name, subject, ca, ca_key, ext)
  local key, crt = dir .. "/" .. name .. ".key", dir .. "/" .. name .. ".crt"
  if ca == nil then
    sh(string.format("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj %s -keyout %s -out %s"
      .. " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
      q(subject), q(key), q(crt)))
    return crt, key
  end
  local csr, extf = dir .. "/" .. name .. ".csr", dir .. "/" .. name .. ".ext"
  local f = assert(io.open(extf, "w"))
  f:write(ext)
  f:close()
  sh(string.format("openssl req -newkey rsa:2048 -nodes -subj %s -keyout %s -out %s", q(subject), q(key), q(csr)))
  sh(string.format("openssl x509 -req -in %s -CA %s -CAkey %s -CAcreateserial -days 2 -extfile %s -out %s",
    q(csr), q(ca), q(ca_key), q(extf), q(crt)))
  return crt, key
end

function M.make()
  local dir = os.tmpname()
  os.remove(dir)
  sh("mkdir -p " .. q(dir))
  local c = { dir = dir }
  c.ca, c.ca_key = issue(dir, "ca", "/CN=springrun test CA")
  c.other_ca, c.other_ca_key = issue(dir, "other_ca", "/CN=springrun other CA")
  c.server_cert, c.server_key = issue(dir, "server", "/CN=localhost", c.ca, c.ca_key,
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
    .. "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
  c.client_cert, c.client_key = issue(dir, "client", "/CN=springrun test client", c.ca, c.ca_key,
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n")
  c.other_client_cert, c.other_client_key = issue(dir, "other_client", "/CN=stranger",
    c.other_ca, c.other_ca_key,
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n")
  return c
end

function M.remove(c)
  if c and c.dir and c.dir:match("^/tmp/") then os.execute("rm -rf " .. q(c.dir)) end
end

return M
