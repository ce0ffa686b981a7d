"""Train or test ASM-Loc on THUMOS-14 (see README.md). `--demo` runs on synthetic data."""
from engine.run import main

if __name__ == "__main__":
    main("THUMOS")
