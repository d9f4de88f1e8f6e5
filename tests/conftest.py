import os
import sys
import tempfile
from pathlib import Path

import pytest

# samna must never be imported (see tests/tripwire). The tripwire goes first on the path here
# and, through PYTHONPATH, in every `python -m compare` the tests start; each import attempt
# is logged, and the session fails at the end if the log is not empty.
TRIPWIRE = Path(__file__).parent / "tripwire"
SAMNA_LOG = Path(tempfile.gettempdir()) / f"compare-samna-imports-{os.getpid()}.log"
SAMNA_LOG.unlink(missing_ok=True)
os.environ["COMPARE_SAMNA_LOG"] = str(SAMNA_LOG)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TRIPWIRE), os.environ.get("PYTHONPATH")]))
sys.path.insert(0, str(TRIPWIRE))
sys.modules.pop("samna", None)


def pytest_sessionfinish(session, exitstatus):
    if SAMNA_LOG.exists() and SAMNA_LOG.read_text().strip():
        print(f"\nsamna was imported during the tests; stacks in {SAMNA_LOG}:\n{SAMNA_LOG.read_text()}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
