"""One body pass for any mix of adapters: adapter weights as data (issue 29).

The library's `BatchSplit` loops over a split's adapters inside every adapter layer, so a
batch's operators grow with its distinct adapters. Here the adapters' tensors are copied into
per-location stacks (one row per adapter, `bank.Bank`), and a batch runs the base model's own
forward with hooks on the library's adapter layers (`runner.OnePass`) that apply every row's
own adapter with gathered tensors (`compute`): a fixed number of operators per method family
and location, whatever the number of adapters. Methods mix in one pass: the segments are
ordered by family (`plan`), each family acts on its own span of rows only, and a row whose
adapter has no part at a location of its family reads the neutral fill there (zero LoRA,
unit IA3 scale, no bottleneck, a fully masked prefix).

Which configs take this path: `support.stackable` (a pure module, light to import). The others
keep the library's path (`BatchSplit` per compatibility key, app.serving.split_groups).
Submodules are imported where used: this package's import loads neither torch nor adapters.
"""
