"""What a run leaves behind: the recorder that writes the run folder, and the report made from it.
Reads run folders only; never imports fleet."""
