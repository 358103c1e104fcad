"""Ablation grids: a YAML spec expands to keyed training runs (`spec`), which run on Dask and
aggregate into one results table (`runner`); `nser-grid` is the command (`cli`). See docs/grid.md."""
