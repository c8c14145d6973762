;; wat-threshold: a Silt processor written by hand in the WebAssembly text format, from
;; docs/processor-abi.md and docs/record-batch.md alone (no SDK, no compiler).
;;
;; It keeps the records whose value is at least `min_len` bytes long and, when `key` is given,
;; whose key is exactly `key`; kept records are copied byte for byte, so their timestamp
;; deltas (relative to the input batch's first timestamp) stay right. See README.md.
;;
;; Memory map: 0..1024 unused, 1024..4096 the messages below, 4096.. a bump heap that
;; `silt_alloc` and the module share. Nothing on the heap is ever freed: the host's buffers
;; must not be, and the module's own (the copied `key`, the output buffer) live as long as
;; the instance, growing the output buffer geometrically like the host grows its input buffer.
(module
  (memory (export "memory") 1)

  ;; First free byte of the heap.
  (global $heap (mut i32) (i32.const 4096))
  ;; The output buffer: records kept by the last silt_process.
  (global $out_ptr (mut i32) (i32.const 0))
  (global $out_cap (mut i32) (i32.const 0))
  ;; Parameters, set by silt_init.
  (global $initialised (mut i32) (i32.const 0))
  (global $min_len (mut i32) (i32.const 0))
  (global $key_set (mut i32) (i32.const 0))
  (global $key_ptr (mut i32) (i32.const 0))
  (global $key_len (mut i32) (i32.const 0))

  (data (i32.const 1024) "min_len")
  (data (i32.const 1040) "key")
  (data (i32.const 1088) "parameter `min_len` must be a decimal number of at most 9 digits")
  (data (i32.const 1216) "unknown parameter; wat-threshold takes: key, min_len")
  (data (i32.const 1344) "malformed parameters")
  (data (i32.const 1408) "malformed input batch")
  (data (i32.const 1472) "out of memory")
  (data (i32.const 1536) "silt_process called before a successful silt_init")

  (func (export "silt_abi_version") (result i32)
    (i32.const 1))

  ;; Bump allocation, 8-aligned, growing memory as needed; 0 when memory cannot grow.
  (func $alloc (export "silt_alloc") (param $size i32) (result i32)
    (local $ptr i32) (local $end i32) (local $pages i32)
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    ;; `size` is unsigned: a wrap-around means it cannot fit.
    (if (i32.lt_u (local.get $end) (local.get $ptr))
      (then (return (i32.const 0))))
    ;; Pages needed to hold `end` bytes, rounded up, minus the pages there are.
    (local.set $pages
      (i32.sub
        (i32.add (i32.shr_u (local.get $end) (i32.const 16))
                 (i32.ne (i32.and (local.get $end) (i32.const 65535)) (i32.const 0)))
        (memory.size)))
    (if (i32.gt_s (local.get $pages) (i32.const 0))
      (then
        (if (i32.eq (memory.grow (local.get $pages)) (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $ptr))

  ;; Writes (ptr, len) into the result slot.
  (func $set_result (param $slot i32) (param $ptr i32) (param $len i32)
    (i32.store (local.get $slot) (local.get $ptr))
    (i32.store offset=4 (local.get $slot) (local.get $len)))

  ;; Names a message in the result slot and returns the error status 1.
  (func $fail (param $slot i32) (param $ptr i32) (param $len i32) (result i32)
    (call $set_result (local.get $slot) (local.get $ptr) (local.get $len))
    (i32.const 1))

  ;; 1 when the two byte strings are equal.
  (func $eq (param $a i32) (param $a_len i32) (param $b i32) (param $b_len i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $a_len) (local.get $b_len))
      (then (return (i32.const 0))))
    (block $done
      (loop $bytes
        (br_if $done (i32.ge_u (local.get $i) (local.get $a_len)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                    (i32.load8_u (i32.add (local.get $b) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $bytes)))
    (i32.const 1))

  ;; A decimal number of 1 to 9 digits (so it fits an i32), or -1.
  (func $parse_decimal (param $p i32) (param $len i32) (result i32)
    (local $v i32) (local $digit i32) (local $i i32)
    (if (i32.or (i32.eqz (local.get $len)) (i32.gt_u (local.get $len) (i32.const 9)))
      (then (return (i32.const -1))))
    (loop $digits
      (local.set $digit
        (i32.sub (i32.load8_u (i32.add (local.get $p) (local.get $i))) (i32.const 48)))
      (if (i32.gt_u (local.get $digit) (i32.const 9))
        (then (return (i32.const -1))))
      (local.set $v (i32.add (i32.mul (local.get $v) (i32.const 10)) (local.get $digit)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $digits (i32.lt_u (local.get $i) (local.get $len))))
    (local.get $v))

  ;; An unsigned LEB128 varint at `p`, ending before `end`, that fits 32 bits (every length in
  ;; a batch of at most 8 MiB does). Returns (value, position after it), or (0, -1) when the
  ;; varint is cut short or too large.
  (func $varint (param $p i32) (param $end i32) (result i32 i32)
    (local $v i32) (local $shift i32) (local $byte i32)
    (loop $bytes
      (if (i32.ge_u (local.get $p) (local.get $end))
        (then (return (i32.const 0) (i32.const -1))))
      (local.set $byte (i32.load8_u (local.get $p)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      ;; The fifth byte may carry only the top 4 bits, and no continuation.
      (if (i32.and (i32.eq (local.get $shift) (i32.const 28))
                   (i32.gt_u (local.get $byte) (i32.const 15)))
        (then (return (i32.const 0) (i32.const -1))))
      (local.set $v
        (i32.or (local.get $v)
                (i32.shl (i32.and (local.get $byte) (i32.const 127)) (local.get $shift))))
      (local.set $shift (i32.add (local.get $shift) (i32.const 7)))
      (br_if $bytes (i32.and (local.get $byte) (i32.const 128))))
    (local.get $v)
    (local.get $p))

  ;; Skips a varint of up to 10 bytes (the zigzag timestamp delta, a 64-bit value we do not
  ;; need). Returns the position after it, or -1.
  (func $skip_varint (param $p i32) (param $end i32) (result i32)
    (local $n i32)
    (loop $bytes
      (if (i32.or (i32.ge_u (local.get $p) (local.get $end))
                  (i32.ge_u (local.get $n) (i32.const 10)))
        (then (return (i32.const -1))))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br_if $bytes
        (i32.and (i32.load8_u (i32.sub (local.get $p) (i32.const 1))) (i32.const 128))))
    (local.get $p))

  ;; Parameters: u32 count, then count times u32 key_len, key, u32 value_len, value.
  (func (export "silt_init") (param $params i32) (param $len i32) (param $result i32) (result i32)
    (local $p i32) (local $end i32) (local $count i32)
    (local $k_ptr i32) (local $k_len i32) (local $v_ptr i32) (local $v_len i32) (local $n i32)
    (global.set $initialised (i32.const 0))
    (global.set $min_len (i32.const 0))
    (global.set $key_set (i32.const 0))
    (block $bad
      (if (local.get $len)
        (then
          (br_if $bad (i32.lt_u (local.get $len) (i32.const 4)))
          (local.set $end (i32.add (local.get $params) (local.get $len)))
          (local.set $count (i32.load (local.get $params)))
          (br_if $bad (i32.gt_u (local.get $count) (i32.const 64)))
          (local.set $p (i32.add (local.get $params) (i32.const 4)))
          (block $done
            (loop $pairs
              (br_if $done (i32.eqz (local.get $count)))
              (local.set $count (i32.sub (local.get $count) (i32.const 1)))
              ;; key
              (br_if $bad (i32.lt_u (i32.sub (local.get $end) (local.get $p)) (i32.const 4)))
              (local.set $k_len (i32.load (local.get $p)))
              (local.set $k_ptr (i32.add (local.get $p) (i32.const 4)))
              (br_if $bad (i32.gt_u (local.get $k_len) (i32.sub (local.get $end) (local.get $k_ptr))))
              (local.set $p (i32.add (local.get $k_ptr) (local.get $k_len)))
              ;; value
              (br_if $bad (i32.lt_u (i32.sub (local.get $end) (local.get $p)) (i32.const 4)))
              (local.set $v_len (i32.load (local.get $p)))
              (local.set $v_ptr (i32.add (local.get $p) (i32.const 4)))
              (br_if $bad (i32.gt_u (local.get $v_len) (i32.sub (local.get $end) (local.get $v_ptr))))
              (local.set $p (i32.add (local.get $v_ptr) (local.get $v_len)))
              (if (call $eq (local.get $k_ptr) (local.get $k_len) (i32.const 1024) (i32.const 7))
                (then
                  (local.set $n (call $parse_decimal (local.get $v_ptr) (local.get $v_len)))
                  (if (i32.lt_s (local.get $n) (i32.const 0))
                    (then (return (call $fail (local.get $result) (i32.const 1088) (i32.const 64)))))
                  (global.set $min_len (local.get $n)))
                (else
                  (if (call $eq (local.get $k_ptr) (local.get $k_len) (i32.const 1040) (i32.const 3))
                    (then
                      ;; The parameter buffer is the host's: keep a copy of our own.
                      (global.set $key_ptr (call $alloc (local.get $v_len)))
                      (if (i32.eqz (global.get $key_ptr))
                        (then (return (call $fail (local.get $result) (i32.const 1472) (i32.const 13)))))
                      (memory.copy (global.get $key_ptr) (local.get $v_ptr) (local.get $v_len))
                      (global.set $key_len (local.get $v_len))
                      (global.set $key_set (i32.const 1)))
                    (else (return (call $fail (local.get $result) (i32.const 1216) (i32.const 52)))))))
              (br $pairs)))
          (br_if $bad (i32.ne (local.get $p) (local.get $end)))))
      (global.set $initialised (i32.const 1))
      (call $set_result (local.get $result) (i32.const 0) (i32.const 0))
      (return (i32.const 0)))
    (call $fail (local.get $result) (i32.const 1344) (i32.const 20)))

  ;; One uncompressed batch: a 68-byte header (length at 0, version at 4, attributes at 5,
  ;; record count at 48), then records: varint length, then within it a zigzag varint
  ;; timestamp delta, varint key length, key, varint value length, value, headers.
  (func (export "silt_process") (param $batch i32) (param $len i32) (param $result i32) (result i32)
    (local $p i32) (local $end i32) (local $count i32) (local $out i32) (local $size i32)
    (local $record i32) (local $body_end i32) (local $n i32)
    (local $key i32) (local $key_len i32) (local $value_len i32)
    (if (i32.eqz (global.get $initialised))
      (then (return (call $fail (local.get $result) (i32.const 1536) (i32.const 49)))))
    (block $bad
      (br_if $bad (i32.lt_u (local.get $len) (i32.const 68)))
      (br_if $bad (i32.ne (i32.load (local.get $batch)) (local.get $len)))
      (br_if $bad (i32.ne (i32.load8_u offset=4 (local.get $batch)) (i32.const 1)))
      (br_if $bad (i32.ne (i32.load8_u offset=5 (local.get $batch)) (i32.const 0)))
      ;; Kept records are never more bytes than the batch, so an output buffer as large as
      ;; the batch suffices: the next power of two, at least 64 KiB.
      (if (i32.lt_u (global.get $out_cap) (local.get $len))
        (then
          (local.set $size (i32.const 65536))
          (block $big_enough
            (loop $double
              (br_if $big_enough (i32.ge_u (local.get $size) (local.get $len)))
              (local.set $size (i32.shl (local.get $size) (i32.const 1)))
              (br $double)))
          (global.set $out_ptr (call $alloc (local.get $size)))
          (if (i32.eqz (global.get $out_ptr))
            (then
              (global.set $out_cap (i32.const 0))
              (return (call $fail (local.get $result) (i32.const 1472) (i32.const 13)))))
          (global.set $out_cap (local.get $size))))
      (local.set $count (i32.load offset=48 (local.get $batch)))
      (local.set $p (i32.add (local.get $batch) (i32.const 68)))
      (local.set $end (i32.add (local.get $batch) (local.get $len)))
      (local.set $out (global.get $out_ptr))
      (block $done
        (loop $records
          (br_if $done (i32.eqz (local.get $count)))
          (local.set $count (i32.sub (local.get $count) (i32.const 1)))
          (local.set $record (local.get $p))
          ;; length
          (call $varint (local.get $p) (local.get $end))
          (local.set $p)
          (local.set $n)
          (br_if $bad (i32.eq (local.get $p) (i32.const -1)))
          (br_if $bad (i32.gt_u (local.get $n) (i32.sub (local.get $end) (local.get $p))))
          (local.set $body_end (i32.add (local.get $p) (local.get $n)))
          ;; timestamp delta
          (local.set $p (call $skip_varint (local.get $p) (local.get $body_end)))
          (br_if $bad (i32.eq (local.get $p) (i32.const -1)))
          ;; key
          (call $varint (local.get $p) (local.get $body_end))
          (local.set $p)
          (local.set $key_len)
          (br_if $bad (i32.eq (local.get $p) (i32.const -1)))
          (br_if $bad (i32.gt_u (local.get $key_len) (i32.sub (local.get $body_end) (local.get $p))))
          (local.set $key (local.get $p))
          (local.set $p (i32.add (local.get $p) (local.get $key_len)))
          ;; value length (the value and headers are copied, not read)
          (call $varint (local.get $p) (local.get $body_end))
          (local.set $p)
          (local.set $value_len)
          (br_if $bad (i32.eq (local.get $p) (i32.const -1)))
          (br_if $bad (i32.gt_u (local.get $value_len) (i32.sub (local.get $body_end) (local.get $p))))
          (if (i32.and
                (i32.ge_u (local.get $value_len) (global.get $min_len))
                (i32.or
                  (i32.eqz (global.get $key_set))
                  (call $eq (local.get $key) (local.get $key_len)
                            (global.get $key_ptr) (global.get $key_len))))
            (then
              (local.set $n (i32.sub (local.get $body_end) (local.get $record)))
              (memory.copy (local.get $out) (local.get $record) (local.get $n))
              (local.set $out (i32.add (local.get $out) (local.get $n)))))
          (local.set $p (local.get $body_end))
          (br $records)))
      (br_if $bad (i32.ne (local.get $p) (local.get $end)))
      (call $set_result (local.get $result)
        (global.get $out_ptr) (i32.sub (local.get $out) (global.get $out_ptr)))
      (return (i32.const 0)))
    (call $fail (local.get $result) (i32.const 1408) (i32.const 21)))
)
