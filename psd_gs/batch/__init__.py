"""Many objects at once on Ray (docs/design.md section 9): the jobs (``jobs``), one job on a worker
(``worker``), the driver with its index, retries and cancel (``runner``), the table and contact sheet
(``report``) and the held-out suite (``suite``)."""
