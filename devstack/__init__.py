"""Local emulation of the cloud: storage emulator, both functions, the page. No account."""
