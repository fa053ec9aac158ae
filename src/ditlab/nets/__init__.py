"""Networks that more than one part uses (layer 1), so that no part imports another for them."""
