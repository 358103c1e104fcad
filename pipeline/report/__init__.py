"""Paper-style report from a grid's results table: layer-wise curves (Fig. 3), fusion comparison
(Table IV), SNR robustness (Table V), confusion matrices (Fig. 5); `nser-report` is the command.
Kept import-free so that registering the command in `nser` costs nothing; see build.py."""

# The paper tables `nser-report --paper-table` lays out (their values: paper_values.yaml); here, where
# the command's options can name them without importing the report's code.
PAPER_TABLES = ("iii", "iv", "v", "vi")
