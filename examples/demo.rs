//! Drives one task through the default aigentflow workflow graph and prints every transition.
//!
//! Run with `cargo run --example demo` (or `just demo`).

use aigentflow::states::{Event, MachineEvent, StateContext, StateMachine};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut m = StateMachine::new(StateContext::new(
        "demo-project".into(),
        "demo-task".into(),
        "Add a login page with OAuth",
    ));
    m.observe(|event| {
        if let MachineEvent::Transition(t) = event {
            println!("{:<18} --{:<22}--> {}", t.from.as_str(), t.event.as_str(), t.to.as_str());
        }
    });
    m.apply(Event::Start, None)?;
    m.apply(Event::AnalysisComplete, None)?;
    for agent in ["architect", "coder", "tester"] {
        m.context_mut().agent_queue.push(agent.into());
        m.apply(Event::SpawnAgent, None)?;
        let ctx = m.context_mut();
        ctx.agent_queue.clear();
        ctx.current_agent = Some(agent.into());
        ctx.completed_agents.push(agent.into());
        let out = ctx.agent_outputs.entry(agent.into()).or_default();
        out.routing_hints.needs_approval = agent == "architect";
        m.apply(Event::AgentDone, None)?;
        match agent {
            "architect" => {
                m.apply(Event::NeedsApproval, None)?;
                m.apply(Event::Approve, None)?;
                m.apply(Event::Continue, None)?;
            }
            "coder" => {
                let cp = m.create_checkpoint(vec!["src/login.rs".into()]);
                println!("checkpoint {} in {}", cp.id, cp.state);
                m.apply(Event::RouteNext, None)?;
            }
            _ => {
                m.apply(Event::EnterTestPhase, None)?;
                m.apply(Event::TestsFailed, None)?;
                m.apply(Event::StartFix, None)?;
                m.increment_retry();
                m.apply(Event::FixComplete, None)?;
                m.apply(Event::AllTestsPass, None)?;
                m.apply(Event::TestsPassedContinue, None)?;
            }
        }
    }
    m.apply(Event::WorkflowComplete, None)?;
    m.apply(Event::Finalize, None)?;
    println!("{} transitions; final state {}", m.history().len(), m.state());
    Ok(())
}
