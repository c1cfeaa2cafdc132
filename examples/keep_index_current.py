"""Your files, kept current: index a folder, change it, update the index in place, and search
it with a metadata filter.

    python examples/keep_index_current.py
"""

import tempfile
from pathlib import Path

from rag.corpus import read_corpus
from rag.recipes import sync_index

FILES = {
    "setup.md": "# Widget setup\n\nPlug the widget in and hold its button for three seconds.\n",
    "faq.md": "# FAQ\n\nThe widget turns blue when it is charged.\n",
    "old.txt": "Notes about the first widget, which had no button.\n",
}


def main() -> None:
    with tempfile.TemporaryDirectory() as root:
        files, index_dir = Path(root) / "files", Path(root) / "index"
        files.mkdir()
        for name, text in FILES.items():
            (files / name).write_text(text)
        _, changes = sync_index(read_corpus(files).documents, index_dir, progress=False)
        print("first build:", changes)

        (files / "faq.md").write_text("# FAQ\n\nThe widget turns blue when charged. Wipe it dry.\n")
        (files / "old.txt").unlink()
        (files / "safety.md").write_text("# Safety\n\nKeep the widget away from water.\n")
        index, changes = sync_index(read_corpus(files).documents, index_dir, progress=False)
        print("update:", changes)  # only faq.md and safety.md were embedded again

        for hits in index.retriever.search(["how do I clean the widget?"], k=2):
            print("all files:", [(h.chunk.metadata["source"], round(h.score, 3)) for h in hits])
        only = {"source": "safety.md"}  # docs/filters.md: equality, in, ranges, and/or/not
        for hits in index.retriever.search(["how do I clean the widget?"], k=2, filter=only):
            print("safety.md only:", [h.chunk.metadata["source"] for h in hits])


if __name__ == "__main__":
    main()
