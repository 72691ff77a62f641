//! The service side: provision, submit, results, task tracking.
