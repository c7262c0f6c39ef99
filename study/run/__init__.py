"""Many runs, exactly once: the queue, workers, the coordinator of `nfstudy run`, and searches."""
