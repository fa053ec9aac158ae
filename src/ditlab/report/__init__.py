"""``ditlab-report``: gather the runs of a sweep into tables and scaling plots."""
