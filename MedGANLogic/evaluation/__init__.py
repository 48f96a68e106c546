"""Evaluation of the shipped models: phantom report (`make eval`) and real images (`make eval-real`)."""
