"""Train or test ASM-Loc on THUMOS-14 (see README.md). `--demo` runs on synthetic data."""
import runner

if __name__ == "__main__":
    runner.main("THUMOS")
