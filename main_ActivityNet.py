"""Train or test ASM-Loc on ActivityNet-1.3 (see README.md)."""
import engine

if __name__ == "__main__":
    engine.main("ActivityNet")
