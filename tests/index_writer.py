"""Child process for the durability and concurrency tests: writes to an index, reporting each commit.

python tests/index_writer.py [--kind=KIND] FOLDER START_BATCH [CRASH_AT]
python tests/index_writer.py [--kind=KIND] FOLDER churn

KIND is a name in workbench.indexes.KINDS (default voyager): the index FOLDER/index is opened as.

Batch b holds documents "b-0" ... "b-{BATCH-1}", whose embeddings come from embeddings_for(b).
Without CRASH_AT it appends forever (the parent kills it at a random moment). With CRASH_AT = k
it commits one batch, then kills itself with SIGKILL during the next add_documents: halfway
through its k-th file write, or, when the add makes fewer writes, just before the manifest switch.

``churn`` adds and removes documents forever (the parent kills it): each round adds CHURN documents
"c{round}-{i}" and removes those of two rounds before, so positions shift at every removal. Their
embeddings are ``sparse_embedding(id)``.
"""

import itertools
import os
import signal
import sys

import numpy as np

BATCH = 40
TOKENS = 30
DIM = 32
CHURN = 20
SPARSE_TOKENS = 8


def sparse_embedding(document_id: str) -> np.ndarray:
    """SPARSE_TOKENS unit tokens of four +-0.5 entries, a function of the id alone.

    fp16 holds these values exactly and every dot product is a multiple of 0.25, so MaxSim against
    them is exact in fp32: a query made of a document's tokens scores it exactly SPARSE_TOKENS
    (and no other document that high), and any (id, score) a search returns can be checked exactly.
    """
    rng = np.random.default_rng(list(document_id.encode()))
    tokens = np.zeros((SPARSE_TOKENS, DIM), dtype=np.float32)
    for row in tokens:
        row[rng.choice(DIM, size=4, replace=False)] = rng.choice([-0.5, 0.5], size=4)
    return tokens


def churn(index) -> None:
    """Add and remove documents forever, reporting each round."""
    for round_ in itertools.count():
        ids = [f"c{round_}-{i}" for i in range(CHURN)]
        index.add_documents(ids, [sparse_embedding(i) for i in ids])
        if round_ >= 2:
            index.remove_documents([f"c{round_ - 2}-{i}" for i in range(CHURN)])
        print(f"committed {round_}", flush=True)


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

    kinds = [arg.split("=", 1)[1] for arg in sys.argv[1:] if arg.startswith("--kind=")]
    args = [arg for arg in sys.argv[1:] if not arg.startswith("--kind=")]
    folder = args[0]
    index = indexes.kind_of(kinds[-1] if kinds else "voyager")(index_folder=folder, index_name="index")
    if args[1] == "churn":
        churn(index)
    batch = int(args[1])
    crash_at = int(args[2]) if len(args) > 2 else 0
    while True:
        index.add_documents([f"{batch}-{i}" for i in range(BATCH)], embeddings_for(batch))
        print(f"committed {batch}", flush=True)
        batch += 1
        if crash_at:
            arm_crash(crash_at)
