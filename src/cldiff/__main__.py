"""`python -m cldiff ...` (also what `torchrun ... -m cldiff train ...` runs)."""
from .cli import main

raise SystemExit(main())
