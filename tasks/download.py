"""`python -m tasks.download <task>|all`: download, verify and unpack the released data (tasks/data/download.py)."""

import sys

from tasks.data.download import main

if __name__ == "__main__":
    sys.exit(main())
