"""The shared utility layer every other package may import (and that imports none of them)."""
