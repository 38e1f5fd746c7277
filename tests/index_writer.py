"""Child process for the durability tests: appends batches, reporting each commit.

python tests/index_writer.py FOLDER START_BATCH [CRASH_AT]

Batch b holds documents "b-0" ... "b-{BATCH-1}", whose embeddings come from embeddings_for(b).
Without CRASH_AT it appends forever (the parent kills it at a random moment). With CRASH_AT = k
it commits one batch, then kills itself with SIGKILL during the next add_documents: halfway
through its k-th file write, or, when the add makes fewer writes, just before the manifest switch.
"""

import os
import signal
import sys

import numpy as np

BATCH = 40
TOKENS = 30
DIM = 32


def embeddings_for(batch: int) -> list[np.ndarray]:
    rng = np.random.default_rng(batch)
    vectors = rng.standard_normal((BATCH, TOKENS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
    return list(vectors)


def arm_crash(crash_at: int) -> None:
    """Make the store die mid-write: a torn file write, or a crash right before the commit."""
    from workbench.store import TokenStore

    writes = {"count": 0}

    def torn(original):
        def write(self, manifest, name, content):
            writes["count"] += 1
            if writes["count"] == crash_at:
                original(self, manifest, name, content[: len(content) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, manifest, name, content)
        return write

    def commit(self, manifest):
        os.kill(os.getpid(), signal.SIGKILL)

    TokenStore._append_bytes = torn(TokenStore._append_bytes)
    TokenStore._write_new = torn(TokenStore._write_new)
    TokenStore._commit = commit


if __name__ == "__main__":
    from workbench import indexes

    folder, batch = sys.argv[1], int(sys.argv[2])
    crash_at = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    index = indexes.Voyager(index_folder=folder, index_name="index")
    while True:
        index.add_documents([f"{batch}-{i}" for i in range(BATCH)], embeddings_for(batch))
        print(f"committed {batch}", flush=True)
        batch += 1
        if crash_at:
            arm_crash(crash_at)
