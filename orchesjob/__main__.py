"""`python -m orchesjob`, and the entry point of orchesjob.pyz."""

from orchesjob.cli import main

if __name__ == "__main__":
    main()
