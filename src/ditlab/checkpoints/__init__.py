"""Checkpoints and run folders: everything that decides how a run starts, stops and resumes.

Training (``ditlab.training.train``) calls into this package; nothing here imports training or models.

* ``checkpoint_file`` -- reading a checkpoint file (weights-only) and checking and copying its
  weights into a model; ``init_from=`` (:func:`~ditlab.checkpoints.checkpoint_file.load_initial_weights`).
* ``stored_config`` -- the run's config stored in every checkpoint, read back as data.
* ``checkpoint_io`` -- atomic checkpoint writes, and the newest complete checkpoint of a run.
* ``step_checkpoint`` -- the every-N-steps ``ModelCheckpoint``.
* ``resume`` -- the resume plan: which options a resume may change, checked against the stored config.
* ``run_dir`` -- what a run folder may hold, and which checkpoint ``ckpt_path=last`` means.
* ``run_lock`` / ``run_attempt`` -- one process group per run folder; an attempt that fails before
  training starts leaves the folder as it was.
"""
