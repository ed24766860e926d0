-- springrun.codec: the Lua side that springrun.json and springrun.serpent
-- share. Their codecs are C (springrun.core) and return the fail tuple
-- (nil, msg, errname); these build the module functions that raise instead,
-- blaming the caller (error level 2), so that both modules refuse misuse
-- with the same words.
local M = {}

local type, error = type, error

--- encode(value) -> bytes, raising the codec's message (which names the
-- path of the offending value).
function M.encoder(c_encode)
  return function(value)
    local s, err = c_encode(value)
    if s == nil then error(err, 2) end
    return s
  end
end

--- decode(text [, opts]) -> value, raising the codec's message (which names
-- the byte offset); opts: { max_depth = ..., max_elements = ... }.
-- name ("json") prefixes the message for a text that is not a string.
function M.decoder(name, c_decode)
  local what = name .. ".decode: expected a string, got "
  return function(text, opts)
    if type(text) ~= "string" then error(what .. type(text), 2) end
    local v, err
    if opts ~= nil then
      v, err = c_decode(text, opts.max_depth, opts.max_elements)
    else
      v, err = c_decode(text)
    end
    if v == nil then error(err, 2) end
    return v
  end
end

--- mark(t) -> t: c_mark sets a sequence marker on t (a new table when t is
-- nil); anything but a table or nil raises, naming fname ("json.array").
function M.marker(fname, c_mark)
  local what = fname .. ": expected a table, got "
  return function(t)
    if t ~= nil and type(t) ~= "table" then error(what .. type(t), 2) end
    return c_mark(t)
  end
end

return M
