"""Train or test ASM-Loc on ActivityNet-1.3 (see README.md). `--demo` runs on synthetic data."""
from engine.run import main

if __name__ == "__main__":
    main("ActivityNet")
