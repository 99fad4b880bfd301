-- Finds the WebSocket Close frame in one direction of an upgraded stream (RFC 6455, 5.2).
--
-- Why: Envoy never ends an upgraded HTTP/1.1 stream normally. When either peer closes
-- its TCP connection (also right after a clean close handshake) the stream is reset, and
-- a reset abandons the filter's coroutines: code after a bodyChunks() loop never runs
-- (docs/filter.md, "How a WebSocket ends in Envoy"). The bytes do pass through those
-- loops, so the filter watches the backend's for its Close frame and releases the lease
-- then.
--
-- Only frame headers are read: a scanner keeps how many payload bytes it still has to
-- skip and the first bytes of a header split across chunks, so a chunk costs one small
-- read per frame that starts in it, never a copy of the payload. Control frames (Close
-- is one) are never fragmented nor compressed (RFC 6455 5.5, RFC 7692 6), so a Close
-- frame's header alone says what it is.
--
-- A stream that does not speak WebSocket framing (garbage, another upgrade protocol)
-- may make the scanner lose the frame boundaries; it then simply never reports a Close,
-- and the stream's lease is released by the lease log (lease_log.lua) when it ends.
local M = {}

local OPCODE_CLOSE = 0x8
local MAX_HEADER = 14 -- 2 + 8 (64-bit length) + 4 (mask key)

local Scanner = {}
Scanner.__index = Scanner

--- A scanner for one direction; `scanner:feed(chunk)` per body chunk.
function M.scanner()
  return setmetatable({ skip = 0, partial = "", closed = false }, Scanner)
end

-- Length of a frame header, from its second byte (the mask bit and the 7-bit length).
local function header_length(b2)
  local len7 = b2 % 128
  local n = 2
  if len7 == 126 then n = n + 2 elseif len7 == 127 then n = n + 8 end
  if b2 >= 128 then n = n + 4 end -- masked: a 4-byte key follows the length
  return n
end

-- Payload length from a complete header string.
local function payload_length(h)
  local b2 = h:byte(2)
  local len7 = b2 % 128
  if len7 < 126 then return len7 end
  local n, len = (len7 == 126) and 2 or 8, 0
  for i = 3, 2 + n do len = len * 256 + h:byte(i) end
  return len
end

--- Scans one chunk: an Envoy buffer (length(), getBytes(offset, n) with a 0-based
-- offset) or anything with those two methods. Returns true once a Close frame has been
-- seen in this direction (and on every later call).
function Scanner:feed(chunk)
  if self.closed then return true end
  local length = chunk:length()
  local pos = 0
  while pos < length do
    if self.skip > 0 then
      local n = math.min(self.skip, length - pos)
      self.skip = self.skip - n
      pos = pos + n
    else
      -- A header: complete the partial one from the previous chunk, if any.
      local have = self.partial
      local want = #have < 2 and MAX_HEADER or header_length(have:byte(2))
      local take = math.min(want - #have, length - pos)
      local h = have .. chunk:getBytes(pos, take)
      if #h >= 2 then
        local need = header_length(h:byte(2))
        if #h >= need then
          -- A whole header; bytes read past it belong to the payload (or the next frame).
          pos = pos + take - (#h - need)
          h = h:sub(1, need)
          self.partial = ""
          if h:byte(1) % 16 == OPCODE_CLOSE then
            self.closed = true
            return true
          end
          self.skip = payload_length(h)
        else
          self.partial = h
          pos = pos + take
        end
      else
        self.partial = h
        pos = pos + take
      end
    end
  end
  return false
end

return M
