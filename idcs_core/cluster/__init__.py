"""Several nodes on one database: who is running (``nodes``), who runs the once-per-cluster
periodic work (``leader``), and what ``idcs cluster status`` shows (``status``)."""
