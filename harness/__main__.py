import sys

try:
    from harness.cli import main
except KeyboardInterrupt:  # Ctrl-C while torch imports: nothing has run yet
    print("\ninterrupted before anything ran", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
