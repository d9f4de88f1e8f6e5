"""The prepared GPU check as a script; the check itself is compare/gpu_check.py (also
`compare bench --device cuda`)."""

import sys

from compare.gpu_check import main

if __name__ == "__main__":
    sys.exit(main())
