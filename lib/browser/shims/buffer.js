// The browser bundle's `Buffer` (injected by esbuild where lib/values.js and
// lib/execution.js name it): just what they use. There are no Buffers in a
// browser, so a value tagged `Buffer` (written by Node) revives as a Uint8Array.

const utf8 = new TextEncoder()

function base64(bytes) {
  let s = ''
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000))
  return btoa(s)
}

export const Buffer = {
  isBuffer: () => false,
  byteLength: (text) => utf8.encode(text).length,
  from(x, offsetOrEncoding, length) {
    if (typeof x === 'string') {
      const bin = atob(x)
      const out = new Uint8Array(bin.length)
      for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i)
      return out
    }
    const bytes = new Uint8Array(x, offsetOrEncoding, length)
    return { toString: () => base64(bytes) }
  },
}
