"""Forward Gflops per image in the DiT paper's convention: the counts live next to the model, in
:mod:`ditlab.models.accounting` (convention and both counts documented there); this module keeps
the names ``ditlab-flops`` and older scripts import."""

from ditlab.models.accounting import closed_form_gflops, count_params, measured_gflops

__all__ = ["closed_form_gflops", "count_params", "measured_gflops"]
