"""Spiking networks trained end to end with surrogate gradients (Norse)."""

import warnings

# Norse 1.1 scripts some functions with torch.jit at import, which torch >= 2.10 flags as
# deprecated on every import; the warning is about Norse's internals, not about this package.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
