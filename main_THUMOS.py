"""Train or test ASM-Loc on THUMOS-14 (see README.md). `--demo` runs on synthetic data."""
import engine

if __name__ == "__main__":
    engine.main("THUMOS")
