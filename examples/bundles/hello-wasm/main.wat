;; hello-wasm: a WAGI handler. The runner runs `_start` once per request with the CGI
;; variables as its environment and the request body on stdin; what it writes on stdout is
;; the response: header lines, a blank line, the body.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 26 bytes of header block, then the 15-byte body
  (data (i32.const 64) "Content-Type: text/plain\n\nhello from wasm")
  (func (export "_start")
    ;; one iovec at 0: (pointer, length); bytes written go to 8
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 41))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
