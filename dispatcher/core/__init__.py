"""The domain, below every store and the run: one module per idea.

- `status`: the fates of a batch (ok, retry, failed, rejected, pending) and how a reply's code is counted;
- `record`: one outcome line, with the keys of the reference in its order;
- `state`: what a journal holds, as a resume needs it (`JournalState`, `JobRecord`);
- `job`, `export`, `batch`: a validated job, what was read of its export, and its batches;
- `ports`: where batches come from (`BatchSource`) and where fates go (`Journal`).
"""
