;; The content chunker's cut search (chunker.ts, findCut), in WebAssembly: the same FastCDC-style gear hash,
;; 2.5 - 7 x faster than the JavaScript loop on this project's machine (V8 compiles this to a tight loop
;; without typed-array bounds checks). Build: `node dist/scripts/build-gear-wasm.js` writes gear-wasm.ts;
;; test/store-chunker.test.ts checks that the two agree and that the cuts equal a JavaScript reference.
;;
;; Memory: the 256-word gear table at byte 0 (written by chunker.ts), the chunker's working buffer from
;; byte 1024 (2 x CHUNK_MAX). Positions passed in are relative to the working buffer.
(module
  (import "chunker" "min" (global $min i32))
  (import "chunker" "max" (global $max i32))
  (import "chunker" "normal" (global $normal_size i32))
  (import "chunker" "maskHard" (global $mask_hard i32))
  (import "chunker" "maskEasy" (global $mask_easy i32))
  ;; 129 pages of 64 KiB: the table's 1 KiB plus 8 MiB.
  (memory (export "memory") 129)
  ;; The length of the chunk that starts at $start, given $avail bytes from there (see chunker.ts).
  (func (export "findCut") (param $start i32) (param $avail i32) (result i32)
    (local $limit i32) (local $normal i32) (local $h i32) (local $i i32) (local $mask i32)
    (if (i32.le_u (local.get $avail) (global.get $min)) (then (return (local.get $avail))))
    (local.set $limit (i32.add (local.get $start)
      (select (local.get $avail) (global.get $max) (i32.lt_u (local.get $avail) (global.get $max)))))
    (local.set $normal (i32.add (local.get $start) (global.get $normal_size)))
    (if (i32.gt_u (local.get $normal) (local.get $limit)) (then (local.set $normal (local.get $limit))))
    ;; The first $min bytes can never hold a cut, so they are not hashed at all.
    (local.set $i (i32.add (local.get $start) (global.get $min)))
    (local.set $mask (global.get $mask_hard))
    (block $done_hard
      (loop $hard
        (br_if $done_hard (i32.ge_u (local.get $i) (local.get $normal)))
        (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
          (i32.load (i32.shl (i32.load8_u offset=1024 (local.get $i)) (i32.const 2)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (if (i32.eqz (i32.and (local.get $h) (local.get $mask)))
          (then (return (i32.sub (local.get $i) (local.get $start)))))
        (br $hard)))
    (local.set $mask (global.get $mask_easy))
    (block $done_easy
      (loop $easy
        (br_if $done_easy (i32.ge_u (local.get $i) (local.get $limit)))
        (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
          (i32.load (i32.shl (i32.load8_u offset=1024 (local.get $i)) (i32.const 2)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (if (i32.eqz (i32.and (local.get $h) (local.get $mask)))
          (then (return (i32.sub (local.get $i) (local.get $start)))))
        (br $easy)))
    (i32.sub (local.get $limit) (local.get $start))))
