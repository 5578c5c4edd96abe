;; Linked into the engine module by wizer.mjs: while wizer pre-initializes
;; the engine, the wasi calls whose answers differ from build to build get
;; the same answers in every build, so the memory snapshot is the same:
;; random_get a fixed stream of bytes, clock_time_get a fixed clock, and
;; path_filestat_get the file's real type and size but no device, inode,
;; link count or times (the engine keeps the last stat it made in a static).
;; Once the initializer returns, all three forward to the real imports,
;; which componentize-js then stubs as before (a job has no random, clocks
;; or files), so a built job behaves exactly as without this module.
(module
  (import "main" "memory" (memory 0))
  (import "main" "INIT_FUNC" (func $init))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_filestat_get" (func $path_filestat_get (param i32 i32 i32 i32 i32) (result i32)))

  ;; 1 from instantiation until the initializer returns (wizer calls the
  ;; engine's _initialize first, then the initializer).
  (global $building (mut i32) (i32.const 1))
  ;; splitmix64 state, fixed seed
  (global $seed (mut i64) (i64.const 0x243F6A8885A308D3))
  ;; nanoseconds since 2020-01-01T00:00:00Z; each reading advances it 1 ms
  (global $now (mut i64) (i64.const 1577836800000000000))

  (func $next (result i64)
    (local $z i64)
    (global.set $seed (i64.add (global.get $seed) (i64.const 0x9E3779B97F4A7C15)))
    (local.set $z (global.get $seed))
    (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 30))) (i64.const 0xBF58476D1CE4E5B9)))
    (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 27))) (i64.const 0x94D049BB133111EB)))
    (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 31))))

  (func (export "random_get") (param $buf i32) (param $len i32) (result i32)
    (local $i i32)
    (if (i32.eqz (global.get $building))
      (then (return (call $random_get (local.get $buf) (local.get $len)))))
    (block $done
      (loop $fill
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (i32.store8 (i32.add (local.get $buf) (local.get $i)) (i32.wrap_i64 (call $next)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $fill)))
    (i32.const 0))

  (func (export "clock_time_get") (param $id i32) (param $precision i64) (param $out i32) (result i32)
    (if (i32.eqz (global.get $building))
      (then (return (call $clock_time_get (local.get $id) (local.get $precision) (local.get $out)))))
    (global.set $now (i64.add (global.get $now) (i64.const 1000000)))
    (i64.store (local.get $out) (global.get $now))
    (i32.const 0))

  ;; filestat: dev u64 @0, ino u64 @8, filetype u8 @16, nlink u64 @24,
  ;; size u64 @32, atim u64 @40, mtim u64 @48, ctim u64 @56
  (func (export "path_filestat_get") (param $fd i32) (param $flags i32) (param $path i32) (param $len i32) (param $out i32) (result i32)
    (local $errno i32)
    (local.set $errno (call $path_filestat_get (local.get $fd) (local.get $flags) (local.get $path) (local.get $len) (local.get $out)))
    (if (i32.and (global.get $building) (i32.eqz (local.get $errno)))
      (then
        (i64.store offset=0 (local.get $out) (i64.const 0))
        (i64.store offset=8 (local.get $out) (i64.const 0))
        (i64.store offset=24 (local.get $out) (i64.const 1))
        (i64.store offset=40 (local.get $out) (i64.const 1577836800000000000))
        (i64.store offset=48 (local.get $out) (i64.const 1577836800000000000))
        (i64.store offset=56 (local.get $out) (i64.const 1577836800000000000))))
    (local.get $errno))

  (func (export "bridge-reproducible.init")
    (call $init)
    (global.set $building (i32.const 0))))
