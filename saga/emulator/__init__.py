"""SGLang-compatible replica emulator: a pure model (``core``) and an aiohttp shell (``server``)."""
