"""Paper-style report from a grid's results table: layer-wise curves (Fig. 3), fusion comparison
(Table IV), SNR robustness (Table V), confusion matrices (Fig. 5); `nser-report` is the command.
Kept import-free so that registering the command in `nser` costs nothing; see build.py."""
