-- Overdue files, newest first (issue 12): the open files (a running,
-- unsuspended process with a due date, about a third of all) in creation
-- order with their due date alongside, so `overdue=true` reads the page
-- from this index alone. Without it the planner walked the whole
-- newest-first index and read each row to test its due date: 20 ms at a
-- million files, when the newest files are not the overdue ones.
CREATE INDEX index_files_open_newest ON index_files (created_at DESC, id DESC)
    INCLUDE (open_due_date)
    WHERE version IS NOT NULL AND open_due_date IS NOT NULL;
