-- springrun.errors: the typed errors proxy calls raise.
local errors = require "springrun.errors"

describe("springrun.errors #unit", function()
  it("builds an error with kind, Pyro4-style class, message and extra fields", function()
    local e = errors.new("timeout", "call x timed out", { url = "PYRO:a@h:1", method = "x" })
    assert.are.equal("timeout", e.kind)
    assert.are.equal("Pyro4.errors.TimeoutError", e.class)
    assert.are.equal("call x timed out", e.message)
    assert.are.equal("PYRO:a@h:1", e.url)
    assert.are.equal("x", e.method)
    assert.are.equal("Pyro4.errors.TimeoutError: call x timed out", tostring(e))
  end)

  it("maps every kind to a class", function()
    local want = {
      attribute = "builtins.AttributeError", refused = "Pyro4.errors.CommunicationError",
      connect = "Pyro4.errors.CommunicationError", rejected = "Pyro4.errors.CommunicationError",
      timeout = "Pyro4.errors.TimeoutError", closed = "Pyro4.errors.ConnectionClosedError",
      protocol = "Pyro4.errors.ProtocolError", serialize = "Pyro4.errors.SerializeError",
      config = "Pyro4.errors.PyroError", remote = "builtins.Exception",
      cancelled = "springrun.errors.CancelledError",
    }
    local n = 0
    for _, k in ipairs(errors.KINDS) do
      assert.are.equal(want[k], errors.new(k, "m").class, k)
      n = n + 1
    end
    assert.are.equal(11, n)
  end)

  it("refuses an unknown kind", function()
    assert.has_error(function() errors.new("nope", "m") end, "springrun.errors.new: unknown kind 'nope'")
  end)

  it("raises the object itself with raise()", function()
    local ok, e = pcall(errors.raise, "closed", "gone")
    assert.is_false(ok)
    assert.is_true(errors.is(e, "closed"))
    assert.are.equal("gone", e.message)
  end)

  it("turns a Pyro4 exception payload into a remote error with the traceback joined", function()
    local e = errors.from_remote({
      __class__ = "builtins.ValueError", __exception__ = true, args = { "boom" },
      attributes = { _pyroTraceback = { "Traceback (most recent call last):\n", "  File \"x.py\", line 1\n",
        "ValueError: boom\n" } },
    }, { url = "PYRO:s@h:1", method = "fail" })
    assert.are.equal("remote", e.kind)
    assert.are.equal("builtins.ValueError", e.class)
    assert.are.equal("boom", e.message)
    assert.are.same({ "boom" }, e.args)
    assert.are.equal("Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: boom\n",
      e.remote_traceback)
    assert.are.equal("fail", e.method)
    assert.are.equal(table.concat({
      "builtins.ValueError: boom",
      " +--- This exception occured remotely - Remote traceback:",
      " | Traceback (most recent call last):",
      " |   File \"x.py\", line 1",
      " | ValueError: boom",
      " +--- End of remote traceback",
    }, "\n"), tostring(e))
  end)

  it("joins several args into the message and keeps a null traceback empty", function()
    local e = errors.from_remote({ __class__ = "builtins.KeyError", args = { "a", 2 },
      attributes = { _pyroTraceback = require("springrun.json").null } })
    assert.are.equal("a, 2", e.message)
    assert.are.equal("", e.remote_traceback)
    assert.are.equal("builtins.KeyError: a, 2", tostring(e))
  end)

  it("still gives an error object for a payload that is not an exception map", function()
    local e = errors.from_remote("weird")
    assert.are.equal("remote", e.kind)
    assert.are.equal("weird", e.message)
  end)

  it("checks kind, class and the communication group with is()", function()
    local e = errors.new("refused", "no")
    assert.is_true(errors.is(e))
    assert.is_true(errors.is(e, "refused"))
    assert.is_true(errors.is(e, "Pyro4.errors.CommunicationError"))
    assert.is_true(errors.is(e, "communication"))
    assert.is_false(errors.is(e, "timeout"))
    assert.is_false(errors.is(errors.new("attribute", "x"), "communication"))
    assert.is_false(errors.is("refused", "refused"))
    assert.is_false(errors.is({ kind = "refused" }))
  end)
end)
