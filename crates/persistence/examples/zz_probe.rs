use std::io::BufRead;
fn main() {
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { return };
        let line = line.replace("\\n", "\n");
        let out = aigentflow_persistence::redact::redact_text(&line);
        println!("{} {}", if out == line { "KEPT " } else { "RED  " }, out.replace('\n', "\\n"));
    }
}
