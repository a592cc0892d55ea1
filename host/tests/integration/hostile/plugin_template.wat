;; The skeleton of a well-behaved ABI v1 plugin; each hostile test swaps one part for an
;; attack (the parts in braces below). The default score answers
;; 1.0 for every sample (groups of fewer than 128 samples: the count is one byte).
(module
  {imports}
  {memory}
  ;; PluginInfo: name "test", version "0", description "".
  (data (i32.const 16) "\04test\010\00")
  (func (export "r1_abi_version") (result i32) (i32.const 1))
  (func (export "r1_info") (result i64)
    (i64.or (i64.const 16) (i64.shl (i64.const 8) (i64.const 32))))
  {alloc}
  {score}
  {extra}
)
