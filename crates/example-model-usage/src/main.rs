//! Runs the model-usage extension once on a database: `aigentflow-example-model-usage
//! [LOCATION]` (a path, `sqlite:PATH` or a `postgres://` URL; default
//! `orchestrator-data/example.db`). It opens the database with the extension's migration set,
//! starts a task, records a model call with the task's next step, and prints what it reads
//! back, then the database's migration sets.

use aigentflow::serde_json::json;
use aigentflow::states::Event;
use aigentflow::TaskId;
use aigentflow_example_model_usage::{open, Call, ModelUsage};

fn main() -> std::process::ExitCode {
    let location =
        std::env::args().nth(1).unwrap_or_else(|| "orchestrator-data/example.db".to_owned());
    match run(&location) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(location: &str) -> aigentflow::Result<()> {
    let db = open(location)?;
    let usage = ModelUsage::new(db.clone());
    let task = TaskId::new(format!("example-{}", db.now().timestamp_millis()));
    usage.start_task("example", task.as_str(), "summarise the design")?;
    let request_id = format!("req-{task}");
    let call = Call {
        request_id: &request_id,
        model: "claude-sonnet",
        prompt: "summarise the design",
        input_tokens: 1200,
        output_tokens: 300,
        cost_usd: 0.0081,
        details: json!({ "stop_reason": "end_turn" }),
        note: None,
    };
    let state = usage.record_step(&task, Event::AnalysisComplete, &call)?;
    println!("task {task} is now {}", state.as_str());
    for u in usage.usage_of(&task)? {
        println!(
            "{} {} in={} out={} ${:.4} at {}",
            u.request_id, u.model, u.input_tokens, u.output_tokens, u.cost_usd, u.recorded_at
        );
    }
    for set in db.migration_sets()? {
        println!("migration set {} at version {}", set.name, set.version);
    }
    Ok(())
}
