;; contains-reference: an r1 reward plugin written by hand in WebAssembly text, to show
;; that ABI v1 needs no SDK (see plugins/ABI.md). Scores 1.0 when the completion contains
;; the reference answer as a substring, 0.0 when it does not, and "not applicable" when
;; the sample has no (or an empty) reference. It reads the postcard request and writes
;; the postcard response itself: varints, length-prefixed strings, an option tag, and
;; the two-variant score enum.
(module
  ;; Announce each sample, so a trap or timeout names it.
  (import "r1" "sample" (func $announce_sample (param i32)))

  (memory (export "memory") 1)

  ;; r1_info's answer, postcard-encoded: three length-prefixed strings.
  (data (i32.const 16)
    "\12contains-reference"
    "\050.1.0"
    "\441 when the completion contains the reference answer (written in WAT)")
  (global $info_ptr i32 (i32.const 16))
  (global $info_len i32 (i32.const 94))

  ;; Bump allocator: the instance lives for one call, so nothing is ever freed.
  (global $heap (mut i32) (i32.const 1024))
  ;; Read cursor into the request.
  (global $cur (mut i32) (i32.const 0))

  (func (export "r1_abi_version") (result i32) (i32.const 1))

  (func $alloc (export "r1_alloc") (param $len i32) (result i32)
    (local $ptr i32) (local $end i32) (local $have i32)
    (if (i32.lt_s (local.get $len) (i32.const 0)) (then (return (i32.const 0))))
    ;; 8-byte alignment
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (if (i32.lt_u (local.get $end) (local.get $ptr)) (then (return (i32.const 0))))
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535))
                                      (i32.const 16)))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $ptr))

  (func $pack (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.extend_i32_u (local.get $ptr))
            (i64.shl (i64.extend_i32_u (local.get $len)) (i64.const 32))))

  (func (export "r1_info") (result i64)
    (call $pack (global.get $info_ptr) (global.get $info_len)))

  ;; Unsigned LEB128 varint at the cursor (postcard's lengths and counts).
  (func $read_varint (result i32)
    (local $result i32) (local $shift i32) (local $byte i32)
    (loop $more
      (local.set $byte (i32.load8_u (global.get $cur)))
      (global.set $cur (i32.add (global.get $cur) (i32.const 1)))
      (local.set $result (i32.or (local.get $result)
        (i32.shl (i32.and (local.get $byte) (i32.const 0x7f)) (local.get $shift))))
      (local.set $shift (i32.add (local.get $shift) (i32.const 7)))
      (br_if $more (i32.and (local.get $byte) (i32.const 0x80))))
    (local.get $result))

  ;; Writes `value` as a varint at `at`; returns the address after it.
  (func $write_varint (param $at i32) (param $value i32) (result i32)
    (loop $more
      (if (i32.ge_u (local.get $value) (i32.const 0x80))
        (then
          (i32.store8 (local.get $at) (i32.or (i32.and (local.get $value) (i32.const 0x7f)) (i32.const 0x80)))
          (local.set $at (i32.add (local.get $at) (i32.const 1)))
          (local.set $value (i32.shr_u (local.get $value) (i32.const 7)))
          (br $more))))
    (i32.store8 (local.get $at) (local.get $value))
    (i32.add (local.get $at) (i32.const 1)))

  ;; Skips one length-prefixed string at the cursor.
  (func $skip_string
    (local $len i32)
    (local.set $len (call $read_varint))
    (global.set $cur (i32.add (global.get $cur) (local.get $len))))

  ;; 1 when bytes [needle, needle+nlen) occur in [hay, hay+hlen).
  (func $contains (param $hay i32) (param $hlen i32) (param $needle i32) (param $nlen i32) (result i32)
    (local $i i32) (local $j i32)
    (if (i32.gt_u (local.get $nlen) (local.get $hlen)) (then (return (i32.const 0))))
    (block $done
      (loop $at
        (br_if $done (i32.gt_u (local.get $i) (i32.sub (local.get $hlen) (local.get $nlen))))
        (local.set $j (i32.const 0))
        (block $mismatch
          (loop $cmp
            (if (i32.eq (local.get $j) (local.get $nlen)) (then (return (i32.const 1))))
            (br_if $mismatch (i32.ne
              (i32.load8_u (i32.add (local.get $hay) (i32.add (local.get $i) (local.get $j))))
              (i32.load8_u (i32.add (local.get $needle) (local.get $j)))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $cmp)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $at)))
    (i32.const 0))

  (func (export "r1_score") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32) (local $i i32) (local $out i32) (local $o i32)
    (local $completion i32) (local $clen i32) (local $reference i32) (local $rlen i32)
    (local $has_reference i32) (local $pairs i32)
    (global.set $cur (local.get $ptr))
    (local.set $n (call $read_varint))
    ;; Response: varint(n) + at most 5 bytes per score + varint(0) diagnostics.
    (local.set $out (call $alloc (i32.add (i32.mul (local.get $n) (i32.const 5)) (i32.const 16))))
    (if (i32.eqz (local.get $out)) (then (unreachable)))
    (local.set $o (call $write_varint (local.get $out) (local.get $n)))
    (block $end
      (loop $sample
        (br_if $end (i32.ge_u (local.get $i) (local.get $n)))
        (call $announce_sample (local.get $i))
        (call $skip_string) ;; prompt
        (local.set $clen (call $read_varint))
        (local.set $completion (global.get $cur))
        (global.set $cur (i32.add (global.get $cur) (local.get $clen)))
        (local.set $has_reference (i32.load8_u (global.get $cur)))
        (global.set $cur (i32.add (global.get $cur) (i32.const 1)))
        (local.set $rlen (i32.const 0))
        (if (local.get $has_reference)
          (then
            (local.set $rlen (call $read_varint))
            (local.set $reference (global.get $cur))
            (global.set $cur (i32.add (global.get $cur) (local.get $rlen)))))
        ;; metadata: varint(m) pairs of strings
        (local.set $pairs (i32.mul (call $read_varint) (i32.const 2)))
        (block $skipped
          (loop $skip
            (br_if $skipped (i32.eqz (local.get $pairs)))
            (call $skip_string)
            (local.set $pairs (i32.sub (local.get $pairs) (i32.const 1)))
            (br $skip)))
        (if (i32.eqz (local.get $rlen))
          (then
            ;; Score::NotApplicable
            (i32.store8 (local.get $o) (i32.const 1))
            (local.set $o (i32.add (local.get $o) (i32.const 1))))
          (else
            ;; Score::Value(f32), little-endian
            (i32.store8 (local.get $o) (i32.const 0))
            (f32.store align=1 (i32.add (local.get $o) (i32.const 1))
              (f32.convert_i32_u (call $contains (local.get $completion) (local.get $clen)
                                                 (local.get $reference) (local.get $rlen))))
            (local.set $o (i32.add (local.get $o) (i32.const 5)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $sample)))
    ;; no diagnostics
    (local.set $o (call $write_varint (local.get $o) (i32.const 0)))
    (call $pack (local.get $out) (i32.sub (local.get $o) (local.get $out))))
)
