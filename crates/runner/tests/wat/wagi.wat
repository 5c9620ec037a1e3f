;; A WAGI test module: each export is a handler doing one thing a test checks.
;; Memory: 0-15 iovec and results, 24 an opened fd, 200-231 digits, 1024- strings,
;; 4096-8191 a read buffer, 8192- environ pointers, 16384- environ strings.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)

  (data (i32.const 1024) "Content-Type: text/plain\n\n")   ;; 26
  (data (i32.const 1100) "hello from wasm")                 ;; 15
  (data (i32.const 1200) "errno=")                          ;; 6
  (data (i32.const 1300) "data.txt")                        ;; 8
  (data (i32.const 1400) "../outside.txt")                  ;; 14
  (data (i32.const 1500) "out.txt")                         ;; 7
  (data (i32.const 1600) "this is not a header\n\nbody")    ;; 26
  (data (i32.const 1700) "Status: 404 Not Found\nContent-Type: text/plain\n\nnope") ;; 52
  (data (i32.const 1800) "oops, about to trap\n")           ;; 20
  (data (i32.const 1900) "ok")                              ;; 2
  (data (i32.const 2000) "/etc/passwd")                     ;; 11

  (func $write_fd (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $write (param $ptr i32) (param $len i32) (call $write_fd (i32.const 1) (local.get $ptr) (local.get $len)))
  (func $header (call $write (i32.const 1024) (i32.const 26)))

  ;; writes `n` in decimal
  (func $write_num (param $n i32) (local $p i32)
    (local.set $p (i32.const 231))
    (loop $digits
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digits (local.get $n)))
    (call $write (local.get $p) (i32.sub (i32.const 231) (local.get $p))))

  (func $errno (param $e i32)
    (call $write (i32.const 1200) (i32.const 6))
    (call $write_num (local.get $e)))

  (func (export "_start") (call $header) (call $write (i32.const 1100) (i32.const 15)))

  ;; the environment, one VAR=value a line
  (func (export "env") (local $i i32) (local $size i32)
    (call $header)
    (drop (call $environ_sizes_get (i32.const 16) (i32.const 20)))
    (drop (call $environ_get (i32.const 8192) (i32.const 16384)))
    (local.set $size (i32.load (i32.const 20)))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $i) (local.get $size)))
        (if (i32.eqz (i32.load8_u (i32.add (i32.const 16384) (local.get $i))))
          (then (i32.store8 (i32.add (i32.const 16384) (local.get $i)) (i32.const 10))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))
    (call $write (i32.const 16384) (local.get $size)))

  ;; stdin back
  (func (export "echo") (local $n i32)
    (call $header)
    (loop $more
      (i32.store (i32.const 0) (i32.const 4096))
      (i32.store (i32.const 4) (i32.const 4096))
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $n (i32.load (i32.const 8)))
      (if (local.get $n)
        (then (call $write (i32.const 4096) (local.get $n)) (br $more)))))

  ;; opens `path` under `dirfd` for reading and writes what it holds, or errno=N
  (func $cat (param $dirfd i32) (param $path i32) (param $len i32) (local $e i32)
    (call $header)
    (local.set $e (call $path_open (local.get $dirfd) (i32.const 0) (local.get $path) (local.get $len)
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 24)))
    (if (local.get $e) (then (call $errno (local.get $e)) (return)))
    (i32.store (i32.const 0) (i32.const 4096))
    (i32.store (i32.const 4) (i32.const 4096))
    (local.set $e (call $fd_read (i32.load (i32.const 24)) (i32.const 0) (i32.const 1) (i32.const 8)))
    (if (local.get $e) (then (call $errno (local.get $e)) (return)))
    (call $write (i32.const 4096) (i32.load (i32.const 8))))
  (func (export "read3") (call $cat (i32.const 3) (i32.const 1300) (i32.const 8)))
  (func (export "escape") (call $cat (i32.const 3) (i32.const 1400) (i32.const 14)))
  (func (export "absolute") (call $cat (i32.const 3) (i32.const 2000) (i32.const 11)))

  ;; creates out.txt under `dirfd` and writes "ok" to it; answers ok or errno=N
  (func $put (param $dirfd i32) (local $e i32)
    (call $header)
    (local.set $e (call $path_open (local.get $dirfd) (i32.const 0) (i32.const 1500) (i32.const 7)
      (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 24)))
    (if (local.get $e) (then (call $errno (local.get $e)) (return)))
    (call $write_fd (i32.load (i32.const 24)) (i32.const 1900) (i32.const 2))
    (call $write (i32.const 1900) (i32.const 2)))
  (func (export "write3") (call $put (i32.const 3)))
  (func (export "write4") (call $put (i32.const 4)))

  (func (export "spin") (loop $forever (br $forever)))

  ;; grows memory 1 MiB at a time; traps when a grow is refused
  (func (export "grow")
    (loop $more
      (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable))
      (br $more)))

  ;; writes 64 KiB chunks forever
  (func (export "flood")
    (call $header)
    (loop $more (call $write (i32.const 0) (i32.const 65536)) (br $more)))

  ;; sleeps 60 s in poll_oneoff (a host call, not wasm code)
  (func (export "sleep")
    (i64.store (i32.const 4096) (i64.const 0))          ;; userdata
    (i32.store8 (i32.const 4104) (i32.const 0))         ;; tag: clock
    (i32.store (i32.const 4112) (i32.const 1))          ;; monotonic
    (i64.store (i32.const 4120) (i64.const 60000000000));; timeout, ns
    (i64.store (i32.const 4128) (i64.const 0))          ;; precision
    (i32.store16 (i32.const 4136) (i32.const 0))        ;; relative
    (drop (call $poll_oneoff (i32.const 4096) (i32.const 5000) (i32.const 1) (i32.const 16)))
    (call $header))

  (func (export "badheader") (call $write (i32.const 1600) (i32.const 26)))
  (func (export "noheader") (call $write (i32.const 1100) (i32.const 15)))
  (func (export "status") (call $write (i32.const 1700) (i32.const 52)))
  (func (export "trap") (call $write_fd (i32.const 2) (i32.const 1800) (i32.const 20)) unreachable)
  (func (export "exit3") (call $proc_exit (i32.const 3)))
  (func (export "exit0") (call $header) (call $write (i32.const 1900) (i32.const 2)) (call $proc_exit (i32.const 0)))
  (func (export "notahandler") (param i32))
)
