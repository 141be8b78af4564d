from vdsomatrix.cli import main

raise SystemExit(main())
