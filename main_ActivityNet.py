"""Train or test ASM-Loc on ActivityNet-1.3 (see README.md)."""
import runner

if __name__ == "__main__":
    runner.main("ActivityNet")
