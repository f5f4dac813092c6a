from tkcloud_api.cli import main

raise SystemExit(main())
