"""Evaluation stage (BFCL, tau2, tau2-style SQL tasks). Arrives with the evaluation issue."""
